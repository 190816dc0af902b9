"""Templates to bytes: Jinja2 rendering, CSS inlining, MIME, and the signed links in each email."""
