"""Type stubs for vismem's compiled core (python/src/vismem_py.cpp)."""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

_Path = Union[str, os.PathLike[str]]
_Strs = Union[str, Sequence[str], npt.NDArray[Any]]
_Floats = npt.ArrayLike

class SearchResult:
    """Neighbors of nq queries, k per query, ascending distance."""
    @property
    def distances(self) -> npt.NDArray[np.float32]:
        """float32 (nq, k) cosine distances 1 - <q, m>."""
    @property
    def ids(self) -> npt.NDArray[np.object_]:
        """object (nq, k) item ids (str)."""
    @property
    def labels(self) -> npt.NDArray[np.object_]:
        """object (nq, k) labels (str)."""
    @property
    def seq(self) -> npt.NDArray[np.int64]:
        """int64 (nq, k) insertion order."""
    @property
    def k(self) -> int: ...
    @property
    def shape(self) -> Tuple[int, int]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> List[Tuple[str, str, float, int]]: ...
    def to_dict(self, query_ids: Optional[_Strs] = None, true_labels: Optional[_Strs] = None,
                featurizer: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        """The SPEC section 7 neighbor-file dict, keyed by query id."""
    def write(self, path: _Path, query_ids: Optional[_Strs] = None, true_labels: Optional[_Strs] = None,
              featurizer: Optional[str] = None) -> None:
        """Writes the neighbor file (as `vismem search --out`)."""

class Encoder:
    """An image encoder (MobileNet .tflite, DINOv2 / CLIP HF checkpoint)."""
    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def input_size(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def preprocess(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def precision(self) -> str: ...
    def embed(self, inputs: Union[_Path, Sequence[_Path], npt.NDArray[Any]], batch: int = 32, threads: int = 0,
              normalize: bool = True) -> npt.NDArray[np.float32]:
        """float32 (N, dim) embeddings of image files, uint8 (N,S,S,3) RGB or float (N,3,H,W) pixels."""

class Memory:
    """A visual memory file: (id, label, embedding) items and an exact index."""
    @staticmethod
    def create(path: _Path, dim: Optional[int] = None, model: Optional[_Path] = None,
               model_id: Optional[str] = None, index: Optional[str] = None, index_fold_rows: int = 0,
               precision: Optional[str] = None) -> Memory:
        """Creates an empty memory (dim=D, or model=PATH to bind an encoder, precision="int8" for int8 GEMMs;
        index="IVF1024,PQ64" for approximate search)."""
    @staticmethod
    def open(path: _Path) -> Memory:
        """Opens a memory file."""
    def close(self) -> None: ...
    def __enter__(self) -> Memory: ...
    def __exit__(self, *args: Any) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def info(self) -> Dict[str, Any]:
        """What `vismem info --json` prints."""
    def __len__(self) -> int: ...
    def __contains__(self, id: str) -> bool: ...
    def refresh(self) -> None: ...
    def add(self, ids: _Strs, labels: _Strs, x: _Floats, mode: str = "strict") -> Dict[str, int]:
        """Adds n items (x float (n, dim)); mode strict | upsert | skip_existing."""
    def search(self, q: _Floats, k: int = 100, self_ids: Optional[_Strs] = None, threads: int = 0,
               nprobe: int = 0, ef: int = 0, k_factor: int = 0, exact: bool = False) -> SearchResult:
        """The k nearest items of each query (float (nq, dim) or (dim,))."""
    def index_info(self) -> Optional[Dict[str, Any]]:
        """The approximate index (what `vismem index info --json` prints), or None."""
    def set_index(self, factory: str) -> bool:
        """Sets (and builds when large enough) the approximate index; "Flat" removes it."""
    def rebuild_index(self) -> None:
        """Builds the approximate index again from scratch."""
    def remove(self, ids: _Strs, ignore_missing: bool = False) -> int:
        """Removes items for good (unlearning)."""
    def remove_label(self, label: str) -> int: ...
    def labels(self) -> List[str]: ...
    def item(self, id: str) -> Optional[Dict[str, Any]]: ...
    def items(self) -> Dict[str, Any]: ...
    def embedding(self, id: str) -> npt.NDArray[np.float32]: ...
    @overload
    def classify(self, q: npt.NDArray[Any], k: int = 20, vote: str = "rank", ood_k: Optional[int] = None,
                 ood_threshold: Optional[float] = None, abstain: bool = False,
                 query_ids: Optional[_Strs] = None, threads: int = 0) -> Any:
        """A dict per query (one dict for a (dim,) query), as `vismem classify --json`."""
    @overload
    def classify(self, q: Sequence[float], k: int = 20, vote: str = "rank", ood_k: Optional[int] = None,
                 ood_threshold: Optional[float] = None, abstain: bool = False,
                 query_ids: Optional[_Strs] = None, threads: int = 0) -> Any: ...
    def evaluate(self, q: _Floats, labels: _Strs, k: int = 100, ids: Optional[_Strs] = None,
                 exclude_self: bool = False, pruning: str = "memory", normalize_distances: bool = False,
                 threads: int = 0) -> Dict[str, Any]:
        """Accuracy@k of the four rules, as `vismem eval --json`."""
    def prune(self, k: Optional[int] = None, mode: Optional[str] = None, threshold: Optional[float] = None,
              recompute: bool = False, threads: int = 0) -> Dict[str, Any]:
        """Leave-one-out pruning counts and mode, as `vismem prune`."""
    def encoder(self, model: Optional[_Path] = None) -> Encoder:
        """The encoder the memory is bound to."""

def load_encoder(path: _Path, precision: Optional[str] = None) -> Encoder: ...
def scan_image_folder(dir: _Path) -> List[Tuple[str, str, str]]: ...
def blas_core() -> str: ...
def _vote_codes(codes: Any, distances: Any, rule: str, excluded: Any = None, reliability: Any = None,
                normalize: bool = False, distance_power: float = 1.0, temperature: float = 0.07,
                rank_offset: float = 2.0) -> npt.NDArray[np.int32]: ...
def _vote_breakdown(codes: List[int], distances: List[float], k: int, rule: str, excluded: List[int],
                    reliability: List[float], distance_power: float, temperature: float,
                    rank_offset: float) -> Tuple[int, List[Tuple[int, float]], List[float]]: ...
def _evaluate_neighbors(source: str, is_text: bool, k: int, exclude: Any, reliability: Any, normalize: bool,
                        rules: Any) -> Dict[str, Any]: ...
def _read_neighbors(source: str, is_text: bool) -> Tuple[Any, ...]: ...
