"""How `kubehands gateway` serves: uvicorn's HTTP protocol with the bounds a shared gateway needs
(`protocol.py`), and upgraded connections relayed as bytes (`tunnel.py`)."""
