from orderproc.cli import main

main()
