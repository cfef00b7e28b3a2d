from wojak.cli import main

main()
