"""The teacher's prompts, versioned. Any change to the text below must come with a new
PROMPT_VERSION (and its fingerprint in PROMPT_FINGERPRINTS): turns annotated under an older
version are then re-sent by the re-annotation schedule, and only those.

Layout, for the provider's automatic prompt caching (OpenAI: a repeated prefix of 1,024 tokens
or more is billed at the cached-input price): the fixed instructions come first and are the same
in every request, then the image, then what changes (question, answer, hints). The turns of one
conversation, the retries of a turn and the questions about one image therefore repeat the
instructions and the image as one prefix; the partition sends them one after another.
"""
from __future__ import annotations

import hashlib

PROMPT_VERSION = "v2"

SYSTEM = """\
You write reference answers that teach a vision-language model to reason before it answers.
Every answer you write has exactly four sections, in this order, each opened and closed by its tag:

<SUMMARY> One or two sentences: what the question asks and how you will work it out. </SUMMARY>
<CAPTION> What the image shows that matters for this question: objects, text, numbers, positions. Describe; do not answer yet. </CAPTION>
<REASONING> The steps from what the image shows (and any given context) to the answer, one by one. </REASONING>
<CONCLUSION> The final answer, and nothing else that is not part of the answer. </CONCLUSION>

Rules:
- Write nothing before the first tag or after the last one.
- You are given the standard answer. Your conclusion must agree with it in meaning. Reason your way
  to it from the image honestly; never mention that an answer was given to you.
- For a multiple-choice question the conclusion is only the letter of the correct option: no
  option text, no explanation.
- Otherwise match the length the question asks for: a word or number when the standard answer is
  short, a full description when the standard answer is a description.
- Write in the language of the question."""

USER = """\
{context}Question:
{question}
{options}{hints}
Standard answer: {answer}

Write the four-section answer now."""

RETRY = """\
Your previous answer was not accepted: {reason}
Write the four-section answer again, following every rule."""

JUDGE_SYSTEM = """\
You check whether a model's final answer agrees with a reference answer to a question about an image.
Reply with one word, the verdict: "valid" if the final answer is not a refusal and means the same as
the reference answer (wording, formatting and extra detail that does not contradict it are fine),
otherwise "invalid"."""

JUDGE_USER = """\
Question:
{question}

Reference answer: {answer}

Model's final answer: {conclusion}

Verdict (valid or invalid):"""

# sha256 of every template above, joined, for each published version. A test recomputes it.
PROMPT_FINGERPRINTS = {
    "v1": "02f63940aad3b8a932159e6211e050efd3893512d53081b5c2763595a759d0d1",
    "v2": "8a1779b67fd7a4e97e9f412091677cdf307140326d9d155703861c4aa4a68e85",
}


def fingerprint() -> str:
    text = "\0".join([SYSTEM, USER, RETRY, JUDGE_SYSTEM, JUDGE_USER])
    return hashlib.sha256(text.encode()).hexdigest()


def user_text(question: str, answer: str, options: list[str], hints: list[str], context: str = "") -> str:
    from pipeline.sources.base import letter

    opts = ""
    if options:
        opts = "Options:\n" + "\n".join(f"{letter(i)}. {o}" for i, o in enumerate(options)) + "\n"
    hint_text = ""
    if hints:
        hint_text = "Context that may help:\n" + "\n".join(f"- {h}" for h in hints if h) + "\n"
    ctx = f"Earlier in this conversation:\n{context}\n\n" if context else ""
    return USER.format(context=ctx, question=question, options=opts, hints=hint_text, answer=answer)


def generation_messages(
    question: str, answer: str, options: list[str], hints: list[str], image_url: str | None,
    context: str = "", previous: list[tuple[str, str]] = (), detail: str = "auto",
) -> list[dict]:
    """Chat messages for one assistant turn. `previous` holds (rejected reply, reason) pairs of
    earlier attempts, so a retry shows the teacher what went wrong."""
    content: list[dict] = []
    if image_url:
        content.append({"type": "image_url", "image_url": {"url": image_url, "detail": detail}})
    content.append({"type": "text", "text": user_text(question, answer, options, hints, context)})
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
    for reply, reason in previous:
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": RETRY.format(reason=reason)})
    return messages


def judge_messages(question: str, answer: str, conclusion: str) -> list[dict]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": JUDGE_USER.format(question=question, answer=answer, conclusion=conclusion)},
    ]
