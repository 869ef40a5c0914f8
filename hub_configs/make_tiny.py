"""Write the tiny random end-to-end Fun-Audio-Chat checkpoint (see `transformers_fac.tiny`).

python hub_configs/make_tiny.py OUT_DIR [--seed N]
"""

from transformers_fac.tiny import main

if __name__ == "__main__":
    main()
