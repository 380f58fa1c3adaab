"""`impress`, the command line: wires the ground floor (impress/) to the engine (worker/) and the API (app/)."""
