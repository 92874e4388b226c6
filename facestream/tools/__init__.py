"""Tools on top of the pipeline: whole replays, the store simulator, the demos, an example CRM."""
