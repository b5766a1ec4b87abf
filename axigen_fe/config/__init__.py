"""Configuration: one TOML file parsed once into frozen objects (see L{load.load})."""
