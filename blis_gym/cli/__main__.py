"""`python -m blis_gym.cli`: the same as the `blis-gym` command."""
from . import main

main()
