from humanglue_cli.main import main

main()
