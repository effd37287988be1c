"""Register maps of common energy meters, as data (``<name>.toml``); see :mod:`edge_agent.readers.modbus`."""
