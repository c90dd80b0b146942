"""``python -m model`` runs the model CLI."""

from model.cli import app

app(prog_name="python -m model")
