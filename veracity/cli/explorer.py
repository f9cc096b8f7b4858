"""``veracity explorer``: the network explorer's web server (``explorer.app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from veracity.cli.app import app


@app.command()
def explorer(deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
             port: int = typer.Option(8500, min=1, max=65535, help="port on 127.0.0.1"),
             host: str = typer.Option("127.0.0.1", help="interface to listen on"),
             index: Optional[Path] = typer.Option(None, help="the SQLite index (default: beside the deployment "
                                                            "file, explorer.db); kept, so a restart resumes")) -> None:
    """Serve the network explorer: who is staked, what ran, what was paid, who was slashed and why."""
    import uvicorn

    from veracity.chain.devnet import find_deployment, home
    from veracity.explorer.app import create_app

    dep = find_deployment(deployment)
    db = index or ((deployment.parent if deployment else home()) / "explorer.db")
    print(f"explorer: http://{host}:{port}/ (index {db})", flush=True)
    uvicorn.run(create_app(dep, db), host=host, port=port, log_level="warning")
