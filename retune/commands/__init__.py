"""The command lines, one thin module each: they parse arguments, call the library and print its result."""
