"""`python -m valdrix` runs the command line."""

from valdrix.cli import main

main()
