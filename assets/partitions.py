import dagster as dg

from pipeline import SOURCES

source_partitions = dg.StaticPartitionsDefinition(list(SOURCES))
