from marea.cli import main

main()
