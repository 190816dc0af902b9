"""The engine's own HTML pages (preview index, preview server, report, web replies).

One Jinja environment for all of them: autoescaped, and strict so a typo fails loudly.
"""

from pathlib import Path

import jinja2

PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
