from smorm.cli import main

main()
