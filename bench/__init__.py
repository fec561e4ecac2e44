"""Benchmarks that print comparable tables (`make bench`); never assertions on time."""
import logging

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulators' access logs would bury the tables
