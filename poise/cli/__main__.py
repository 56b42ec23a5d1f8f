from poise.cli import main

main()
