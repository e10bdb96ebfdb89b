"""The Redis stores: every key name and Lua script defined once, each key family written by one module."""
