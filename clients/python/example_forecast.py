#!/usr/bin/env python3
"""Calls ForecastingService.Forecast once and prints the forecast.

The stubs are generated at build time into build/clients/python/ (Debian package
python3-grpc-tools; see cmake/MambaProto.cmake). Run by hand against a running server:

    PYTHONPATH=build/clients/python /usr/bin/python3 clients/python/example_forecast.py \
        --target 127.0.0.1:50051 --model etth1 --horizon 24 --token-file tokens.txt
"""
import argparse
import math
import sys

import grpc

from mamba.common.v1 import common_pb2
from mamba.forecasting.v1 import forecasting_pb2, forecasting_pb2_grpc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--model", required=True, help="model name in the server's repository")
    ap.add_argument("--version", type=int, default=0, help="0 = newest")
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--token-file", help="first non-comment line is sent as the bearer token")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    args = ap.parse_args()

    # A toy hourly series with two variables.
    n = 96
    series = forecasting_pb2.Series(
        timestamps=[f"2026-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z" for i in range(n)],
        variables=[
            forecasting_pb2.Variable(name="load", values=[10 + math.sin(i / 24 * 2 * math.pi) for i in range(n)]),
            forecasting_pb2.Variable(name="temp", values=[20 + 0.1 * i for i in range(n)]),
        ],
    )
    request = forecasting_pb2.ForecastRequest(
        model=common_pb2.ModelSelector(name=args.model, version=args.version),
        series=series,
        horizon=args.horizon,
        quantiles=[0.1, 0.5, 0.9],
        series_id="example-1",
    )

    metadata = []
    if args.token_file:
        with open(args.token_file) as f:
            token = next(line.strip() for line in f if line.strip() and not line.startswith("#"))
        metadata.append(("authorization", f"Bearer {token}"))

    with grpc.insecure_channel(args.target) as channel:
        stub = forecasting_pb2_grpc.ForecastingServiceStub(channel)
        try:
            response = stub.Forecast(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as e:
            print(f"Forecast failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1

    print(f"model {response.model_name} version {response.model_version}, series {response.series_id}")
    for var in response.variables:
        print(f"{var.name}: mean {[round(v, 3) for v in var.mean[:8]]}{' ...' if len(var.mean) > 8 else ''}")
        for q in var.quantiles:
            print(f"  q{q.q:g}: {[round(v, 3) for v in q.values[:8]]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
