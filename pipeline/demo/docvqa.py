"""DocVQA sample: documents rendered with PIL text (invoices, letters, memos, tables) whose printed
fields are the answers.

`write(w)` uses the current release layout (`spdocvqa_qas/*.json`, flat `spdocvqa_images/`);
`write(w, layout="original")` writes the original one (`{split}/{split}_v1.0.json`,
`{split}/documents/`). The records are the same in both: `image` is always `documents/<stem>.png`.
"""
from __future__ import annotations

from pipeline.demo.common import DemoWriter, Planted, canvas, font

W, H = 420, 540
COMPANIES = ["Brightwater Supplies Inc.", "Northfield Laboratories", "Harbor & Finch Co.", "Millstone Foods Ltd."]
PEOPLE = ["Dr. Alice Moreno", "Mr. James Okafor", "Ms. Priya Raman", "Dr. Henrik Larsen", "Mrs. Carol Chen"]
TITLES = ["Director of Research", "Sales Manager", "Vice President", "Chief Chemist"]
CITIES = ["Richmond, Virginia", "Dayton, Ohio", "Tucson, Arizona", "Albany, New York"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ITEMS = ["Filter paper", "Glass vials", "Sample labels", "Test tubes", "Lab coats", "Reagent kit"]


def _date(w: DemoWriter) -> str:
    return f"{w.rng.choice(MONTHS)} {w.rng.randint(1, 28)}, {w.rng.randint(1968, 1999)}"


def _page():
    return canvas(W, H, (250, 250, 246))


def invoice(w: DemoWriter):
    im, d = _page()
    big, f = font(18), font(13)
    company, person, city = w.rng.choice(COMPANIES), w.rng.choice(PEOPLE), w.rng.choice(CITIES)
    number, date = str(w.rng.randint(10000, 99999)), _date(w)
    d.text((30, 25), company, fill=(0, 0, 0), font=big)
    d.text((30, 50), city, fill=(40, 40, 40), font=f)
    d.text((300, 25), "INVOICE", fill=(0, 0, 0), font=big)
    d.text((30, 90), f"Invoice No: {number}", fill=(0, 0, 0), font=f)
    d.text((30, 110), f"Date: {date}", fill=(0, 0, 0), font=f)
    d.text((30, 130), f"Bill to: {person}", fill=(0, 0, 0), font=f)
    d.line([(30, 165), (390, 165)], fill=(0, 0, 0))
    d.text((30, 170), "Item", fill=(0, 0, 0), font=f)
    d.text((230, 170), "Qty", fill=(0, 0, 0), font=f)
    d.text((310, 170), "Amount", fill=(0, 0, 0), font=f)
    d.line([(30, 190), (390, 190)], fill=(0, 0, 0))
    total = 0
    y = 198
    for item in w.rng.sample(ITEMS, 3):
        qty, cents = w.rng.randint(1, 20), w.rng.randint(500, 40000)
        total += cents
        d.text((30, y), item, fill=(0, 0, 0), font=f)
        d.text((230, y), str(qty), fill=(0, 0, 0), font=f)
        d.text((310, y), f"${cents / 100:,.2f}", fill=(0, 0, 0), font=f)
        y += 22
    d.line([(30, y + 4), (390, y + 4)], fill=(0, 0, 0))
    amount = f"${total / 100:,.2f}"
    d.text((230, y + 12), "TOTAL", fill=(0, 0, 0), font=f)
    d.text((310, y + 12), amount, fill=(0, 0, 0), font=f)
    qa = [
        ("What is the invoice number?", [number], ["form"]),
        ("What is the date of the invoice?", [date], ["form"]),
        ("What is the total amount?", [amount, amount.lstrip("$")], ["table/list"]),
        ("To whom is the invoice billed?", [person, person.split(" ", 1)[1]], ["form"]),
    ]
    return im, qa


def letter(w: DemoWriter):
    im, d = _page()
    big, f = font(18), font(13)
    company, sender, title = w.rng.choice(COMPANIES), w.rng.choice(PEOPLE), w.rng.choice(TITLES)
    recipient = w.rng.choice([p for p in PEOPLE if p != sender])
    date, city = _date(w), w.rng.choice(CITIES)
    d.text((30, 25), company, fill=(0, 0, 0), font=big)
    d.text((30, 50), city, fill=(40, 40, 40), font=f)
    d.text((30, 95), date, fill=(0, 0, 0), font=f)
    d.text((30, 130), f"Dear {recipient},", fill=(0, 0, 0), font=f)
    body = [
        "Thank you for your letter about the results of",
        "the spring study. We have reviewed the figures and",
        "would like to meet with your team next month to",
        "discuss the next steps of the program.",
    ]
    for i, line in enumerate(body):
        d.text((30, 160 + 20 * i), line, fill=(0, 0, 0), font=f)
    d.text((30, 270), "Sincerely,", fill=(0, 0, 0), font=f)
    d.text((30, 310), sender, fill=(0, 0, 0), font=f)
    d.text((30, 330), title, fill=(0, 0, 0), font=f)
    qa = [
        ("What is the date mentioned in this letter?", [date], ["layout"]),
        ("Who signed the letter?", [sender], ["layout"]),
        ("What is the designation of the sender?", [title], ["layout"]),
        ("To whom is this letter addressed?", [recipient], ["layout"]),
    ]
    return im, qa


def memo(w: DemoWriter):
    im, d = _page()
    big, f = font(20), font(13)
    to, frm = w.rng.sample(PEOPLE, 2)
    date = _date(w)
    subject = w.rng.choice(["Budget review", "Quarterly shipment", "Safety inspection", "Product samples"])
    d.text((30, 25), "MEMORANDUM", fill=(0, 0, 0), font=big)
    for i, (k, v) in enumerate((("TO:", to), ("FROM:", frm), ("DATE:", date), ("SUBJECT:", subject))):
        d.text((30, 80 + 24 * i), k, fill=(0, 0, 0), font=f)
        d.text((120, 80 + 24 * i), v, fill=(0, 0, 0), font=f)
    d.line([(30, 185), (390, 185)], fill=(0, 0, 0), width=2)
    d.text((30, 200), "Please send your comments before the meeting.", fill=(0, 0, 0), font=f)
    qa = [
        ("What is the subject of the memo?", [subject], ["form"]),
        ("Who is the memo from?", [frm], ["form"]),
        ("What is the date of the memo?", [date], ["form"]),
    ]
    return im, qa


def table(w: DemoWriter):
    im, d = _page()
    big, f = font(16), font(13)
    n = w.rng.randint(2, 9)
    regions = ["North", "South", "East", "West"]
    values = w.rng.sample(range(120, 990), len(regions))
    d.text((30, 25), f"Table {n}: Cartons shipped by region", fill=(0, 0, 0), font=big)
    d.rectangle([30, 60, 330, 60 + 24 * (len(regions) + 1)], outline=(0, 0, 0))
    d.text((40, 64), "Region", fill=(0, 0, 0), font=f)
    d.text((200, 64), "Cartons", fill=(0, 0, 0), font=f)
    for i, (r, v) in enumerate(zip(regions, values)):
        y = 60 + 24 * (i + 1)
        d.line([(30, y), (330, y)], fill=(0, 0, 0))
        d.text((40, y + 4), r, fill=(0, 0, 0), font=f)
        d.text((200, y + 4), str(v), fill=(0, 0, 0), font=f)
    d.line([(180, 60), (180, 60 + 24 * (len(regions) + 1))], fill=(0, 0, 0))
    k = w.rng.randrange(len(regions))
    top = regions[values.index(max(values))]
    qa = [
        (f"How many cartons were shipped to the {regions[k]} region?", [str(values[k])], ["table/list"]),
        ("Which region shipped the most cartons?", [top], ["table/list"]),
        ("What is the table number?", [str(n), f"Table {n}"], ["table/list"]),
    ]
    return im, qa


KINDS = [invoice, letter, memo, table]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def write(w: DemoWriter, layout: str = "current") -> list[Planted]:
    if layout not in ("current", "original"):
        raise ValueError(f"layout must be 'current' or 'original', not {layout!r}")
    planted: list[Planted] = []
    docs = {"train": 6, "val": 2, "test": 1}
    qid, doc_id = 300, 1000
    for split, n in docs.items():
        data: list[dict] = []
        for i in range(n):
            doc_id += 1
            ucsf = "".join(w.rng.choice(LETTERS) for _ in range(4)) + f"{w.rng.randint(0, 9999):04d}"
            page = w.rng.randint(1, 3)
            stem = f"{ucsf}_{page}"
            im, qa = KINDS[i % len(KINDS)](w)
            image_rel = f"{split}/documents/{stem}.png" if layout == "original" else f"spdocvqa_images/{stem}.png"
            w.image(image_rel, im.convert("L"))
            for question, answers, types in qa:
                qid += 1
                rec = {
                    "questionId": qid, "question": question, "question_types": types,
                    "image": f"documents/{stem}.png", "docId": doc_id, "ucsf_document_id": ucsf,
                    "ucsf_document_page_no": str(page), "answers": answers, "data_split": split,
                }
                if split == "test":  # as released: no answers
                    del rec["answers"], rec["question_types"]
                data.append(rec)
        if split == "train":
            good = data[0]
            images = "train/documents" if layout == "original" else "spdocvqa_images"
            w.corrupt_image(f"{images}/zzzz0000_1.png")
            bad = [
                ({**good, "image": "documents/nope0000_1.png"}, "missing_image"),
                ({**good, "image": "documents/zzzz0000_1.png"}, "unreadable_image"),
                ({k: v for k, v in good.items() if k != "answers"}, "malformed_record"),
                ({**good, "question": 42}, "malformed_record"),
                ({**good, "question": " "}, "empty_question"),
                ({**good, "answers": []}, "empty_answer"),
                ({**good, "image": ""}, "no_image"),
            ]
            for rec, reason in bad:
                qid += 1
                data.append({**rec, "questionId": qid})
                planted.append(Planted(f"train/{qid}", reason))
            data.append(dict(data[1]))  # a repeated questionId: the later copy is kept aside
            planted.append(Planted(f"train/{data[1]['questionId']}", "duplicate_id"))
        doc = {"dataset_name": "SP-DocVQA", "dataset_split": split, "dataset_version": "1.0", "data": data}
        if layout == "original":
            w.json(f"{split}/{split}_v1.0.json", doc)
        else:
            name = f"{split}_v1.0.json" if split == "test" else f"{split}_v1.0_withQT.json"
            w.json(f"spdocvqa_qas/{name}", doc)
    return planted
