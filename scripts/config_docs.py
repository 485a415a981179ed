"""Write the README's table of config keys from the schema's field docs
(``lab.config.docs``): ``python scripts/config_docs.py`` after changing a field of
``lab/config/schema.py``; ``--check`` only says whether the table is current (exit 1 if not).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config.docs import with_table  # noqa: E402


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = with_table(text)
    if "--check" in argv:
        if new != text:
            print("README.md's config table is stale: run python scripts/config_docs.py")
            return 1
        return 0
    if new != text:
        readme.write_text(new)
        print("README.md: config table written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
