"""jobs: periodic sweeps run under a database lease."""
