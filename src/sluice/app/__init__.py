"""The application on top of the library: the `sluice` command, its config files, the demo and its report, and the
benchmark runner. Nothing in the library imports from here."""
