"""`python -m openai_fine_tuning.emulator`."""

from .server import main

if __name__ == "__main__":
    main()
