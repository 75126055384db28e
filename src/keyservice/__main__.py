from keyservice.cli import main

main()
