"""Knowledge distillation on text-attributed graphs (PKD).

Shipped TAG datasets (Cora, Citeseer, WebKB), user graphs (``load_custom_tag`` and the ``from_pyg`` /
``from_networkx`` / ``from_tag_dataset`` adapters of :mod:`graphspike_kd.graph.datasets`), few-shot
splits, LLM annotators, a GNN zoo on PyG layers, and the PKD pipeline (GNS node selection, DNS neighbour
context, NGS PPO teacher selection).
Depends on :mod:`graphspike_kd.common`; never on :mod:`graphspike_kd.spiking`.
"""
