"""Tools for trying the engine on one machine: the local SMTP catcher and the demo."""
