"""Print README command N ("# N. ..." in the section "The two commands"), exactly as the README writes it.

.ci/run runs what this prints, so CI runs the README's words, not a copy of them (tests/test_readme.py).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def command(number: int, text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md: no ```bash block under '## The two commands'")
    lines = block.group(1).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"#\s*{number}\.\s", line) and i + 1 < len(lines) and lines[i + 1].strip():
            return lines[i + 1].strip()
    raise SystemExit(f"README.md: no command '# {number}.' under '## The two commands'")


if __name__ == "__main__":
    print(command(int(sys.argv[1])))
