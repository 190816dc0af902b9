"""Entry point: `python run.py --help`."""

from campaign.cli import main

if __name__ == "__main__":
    main()
