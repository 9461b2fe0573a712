#!/usr/bin/env python3
"""Write ecrm_addon/README.rst from the addon's readme/*.md fragments, as OCA's
oca-gen-addon-readme does (that tool is not on PyPI): the page Odoo's Apps and the
repository show. Exits 1 when the file changed (a pre-commit hook: commit it again).

The fragments use the Markdown that is also reStructuredText (paragraphs, ``-`` and
``1.`` lists with aligned continuation lines, ``**bold**``); inline code is turned
into literals and links into reStructuredText links.
"""

import ast
import re
import sys
from pathlib import Path

ADDON = Path(__file__).resolve().parent.parent / "ecrm_addon"
SECTIONS = [("CONFIGURE.md", "Configuration"), ("USAGE.md", "Usage")]


def to_rst(markdown):
    text = re.sub(r"(?<!`)`([^`\n]+)`(?!`)", r"``\1``", markdown.strip())
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"`\1 <\2>`_", text)


def title(text, char, over=False):
    line = char * len(text)
    return f"{line}\n{text}\n{line}\n" if over else f"{text}\n{line}\n"


def render():
    manifest = ast.literal_eval((ADDON / "__manifest__.py").read_text())
    readme = ADDON / "readme"
    parts = [
        title(manifest["name"], "=", over=True),
        f"License: {manifest['license']}\n",
        to_rst((readme / "DESCRIPTION.md").read_text()) + "\n",
        "**Table of contents**\n\n.. contents::\n   :local:\n",
    ]
    for name, heading in SECTIONS:
        if (readme / name).exists():
            parts.append(title(heading, "=") + "\n" + to_rst((readme / name).read_text()) + "\n")
    parts.append(title("Credits", "=") + "\n" + title("Contributors", "-"))
    parts.append(to_rst((readme / "CONTRIBUTORS.md").read_text()) + "\n")
    return "\n".join(parts)


def main():
    target = ADDON / "README.rst"
    content = render()
    if target.exists() and target.read_text() == content:
        return 0
    target.write_text(content)
    print(f"{target} written from the readme fragments: add it to the commit")
    return 1


if __name__ == "__main__":
    sys.exit(main())
