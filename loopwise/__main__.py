from loopwise.cli import app

app()
