"""Shared by the benchmark scripts: write one script's section of benchmarks/README.md."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
HEADER = ("# Benchmarks\n\nPerformance scripts that print ratios measured in one run (not tests). "
          "One section per script, with its latest figures and the exact command.\n")


def write_readme_section(name: str, body: str) -> None:
    """Replace (or append) `## <name>` in benchmarks/README.md; other sections stay untouched."""
    text = README.read_text() if README.exists() else HEADER
    section = f"## {name}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    README.write_text(text)
