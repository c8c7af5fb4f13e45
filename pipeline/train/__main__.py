"""`python -m pipeline.train`: see pipeline/train/train.py."""
from pipeline.train.train import main

if __name__ == "__main__":
    main()
