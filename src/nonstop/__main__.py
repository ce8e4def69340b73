from nonstop.cli.main import main

main()
