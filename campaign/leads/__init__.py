"""How leads come in: validation shared by the command line, CSV imports and the web form."""
