"""gridsight: command-line entry point, the demo, and local services shared by roles."""
