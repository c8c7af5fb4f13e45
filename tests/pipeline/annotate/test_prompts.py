from pipeline.annotate import prompts


def test_prompt_text_is_tied_to_its_version():
    # Changed a prompt? Bump PROMPT_VERSION and record the new fingerprint: the schedule then
    # re-annotates exactly the turns written under the old version.
    assert prompts.PROMPT_FINGERPRINTS.get(prompts.PROMPT_VERSION) == prompts.fingerprint(), (
        f"prompt text changed without a new PROMPT_VERSION (fingerprint {prompts.fingerprint()})"
    )


def test_generation_messages_carry_image_question_options_answer_and_hints():
    msgs = prompts.generation_messages(
        "Which is a mammal?", "B", ["shark", "whale"], ["Mammals breathe air."], "data:image/png;base64,AAAA"
    )
    assert msgs[0]["role"] == "system" and "<CONCLUSION>" in msgs[0]["content"]
    image, text = msgs[1]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    for part in ("Which is a mammal?", "A. shark", "B. whale", "Mammals breathe air.", "Standard answer: B"):
        assert part in text["text"]


def test_retry_feeds_back_the_reason():
    msgs = prompts.generation_messages("q", "a", [], [], None, previous=[("bad reply", "the <CAPTION> is missing")])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "the <CAPTION> is missing" in msgs[-1]["content"]
    assert all(p["type"] != "image_url" for p in msgs[1]["content"])  # no image given, none sent
