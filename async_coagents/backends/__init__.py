"""Backends place the layer agents and carry the protocol's messages between them: in process
(:mod:`.local`) or as Ray actors (:mod:`.ray_backend`). No maths lives here."""
