from relayforge.cli import main

main()
