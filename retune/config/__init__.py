"""The profiles: every setting of a reproduction, typed and checked, read from YAML."""
