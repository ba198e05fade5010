import sys

from services.cli import main

main(["evaluator", *sys.argv[1:]])
