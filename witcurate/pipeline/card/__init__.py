"""The dataset card: README.md and PNG plots shipped beside the shards.

Everything on the card is read back from what the run wrote (manifests), drawn (plots) and
written as markdown (render); build_card does the three in order. Code outside the pipeline
adds to a finished card through the public names below only: a section (`add_card_section`)
and a plot (`pyplot` for the figure, `save_card_plot` to store it beside the README).
"""

from witcurate.pipeline.card.build import build_card
from witcurate.pipeline.card.plots import CARD_DIR, pyplot, save_card_plot, save_plot
from witcurate.pipeline.card.render import README, add_card_section

__all__ = ["CARD_DIR", "README", "add_card_section", "build_card", "pyplot", "save_card_plot",
           "save_plot"]
