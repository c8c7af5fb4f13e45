"""LLaVA-CoT data-and-training library: plain Python, no orchestrator import anywhere in it.

The orchestration layer (assets/, resources/, jobs/, definitions.py) only wires these modules.
"""
SOURCES = (
    "sharegpt4v",
    "chartqa",
    "aokvqa",
    "docvqa",
    "pisc",
    "clevr",
    "geoqa_plus",
    "ai2d",
    "scienceqa",
    "clevr_math",
)
