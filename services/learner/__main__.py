import sys

from services.cli import main

main(["learner", *sys.argv[1:]])
