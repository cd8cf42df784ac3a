"""Intel AMX int8 tiles for the int8 linear (:mod:`.qlinear`'s ``amx`` variant).

AMX (Sapphire Rapids and later Xeons) adds eight tile registers of up to 16
rows x 64 bytes and ``tdpbusd``: a tile of unsigned activation bytes (16 rows
x 64 inputs) times a tile of signed weight bytes (16 groups of 4 inputs x 16
outputs, each row 16 outputs x 4 inputs) added into a tile of 16 x 16 int32
sums. That is the ``vnni`` variant's arithmetic (activations stored as
``q + 128``, the weights' column sums remove the offset again), the same
panels and the same exact integers, 16 x 16 x 64 multiply-adds per
instruction instead of 16 x 4.

:func:`panel_sums` computes 16 or 32 rows of one weight panel (``COLS`` = 32
outputs, rows of 128 bytes: two B tiles side by side, read with a 128-byte
stride): two A tiles (the rows), two B tiles (the panel's halves), four C
tiles, k in steps of 64 inputs. The sums go to a small int32 buffer, and
:func:`.qlinear.qlinear` dequantizes and finishes them as its register tiles
do (the rows no 16-row tile covers, and inputs not a multiple of 64, run on
those tiles).

The tiles are used through LLVM's AMX intrinsics (``llvm.x86.ldtilecfg``,
``tileloadd64``, ``tdpbusd``, ``tilestored64``, ``tilezero``,
``tilerelease``), each tile named by its register number. Every task loads
the tile configuration (:func:`configure`) before its first tile and releases
the tiles after its last: the configuration belongs to the thread.

Linux lets a process use AMX only after it asks (``arch_prctl``
``ARCH_REQ_XCOMP_PERM``); without that the first tile instruction is
SIGILL. :func:`.grants.amx_granted` asks, and the variant is chosen only
where the answer is yes (:mod:`.qsimd`).
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .qsimd import _call  # (IR: call an LLVM intrinsic, declared on first use)

I8 = ir.IntType(8)
VOID = ir.VoidType()
TILE_ROWS = 16  # rows of an A or C tile
TILE_BYTES = 64  # bytes of a tile row: 64 inputs (A), 16 outputs x 4 inputs (B), 16 int32 sums (C)


def _config_bytes() -> list[int]:
    """The 64-byte tile configuration: palette 1, all eight tiles 16 rows x 64 bytes."""
    cfg = [0] * 64
    cfg[0] = 1  # palette 1
    for t in range(8):
        cfg[16 + 2 * t] = TILE_BYTES  # colsb (uint16, little-endian)
        cfg[48 + t] = TILE_ROWS  # rows
    return cfg


@intrinsic
def configure(typingctx):
    """Load the tile configuration (this thread's) from a constant on the stack."""

    def codegen(context, builder, signature, args):
        block = cgutils.alloca_once(builder, ir.ArrayType(I8, 64))
        builder.store(ir.Constant(ir.ArrayType(I8, 64), _config_bytes()), block)
        _call(builder, "llvm.x86.ldtilecfg", VOID, [builder.bitcast(block, ir.PointerType(I8))])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def release(typingctx):
    """Give the tiles back (the thread's tile state is then init again: cheaper to save on a switch)."""

    def codegen(context, builder, signature, args):
        _call(builder, "llvm.x86.tilerelease", VOID, [])
        return context.get_dummy_value()

    return types.void(), codegen


def _tiles(*tiles):
    return all(isinstance(t, types.IntegerLiteral) and 0 <= t.literal_value < 8 for t in tiles)


@intrinsic
def zero(typingctx, t):
    """tile[t] = 0 (``t`` a literal register number)."""
    if not _tiles(t):
        return None

    def codegen(context, builder, signature, args):
        _call(builder, "llvm.x86.tilezero", VOID, [ir.Constant(I8, signature.args[0].literal_value)])
        return context.get_dummy_value()

    return types.void(t), codegen


def _tile_memory(name: str):
    """An intrinsic ``(t, address, stride)``: LLVM's ``name`` between tile[t] (a literal register number)
    and 16 rows of 64 bytes at ``address``, ``stride`` bytes apart."""

    @intrinsic
    def memory(typingctx, t, address, stride):
        if not _tiles(t):
            return None

        def codegen(context, builder, signature, args):
            tile = ir.Constant(I8, signature.args[0].literal_value)
            _call(builder, name, VOID, [tile, builder.inttoptr(args[1], ir.PointerType(I8)), args[2]])
            return context.get_dummy_value()

        return types.void(t, types.int64, types.int64), codegen

    return memory


load = _tile_memory("llvm.x86.tileloadd64")  # tile[t] = the rows at address
store = _tile_memory("llvm.x86.tilestored64")  # the rows at address = tile[t]


@intrinsic
def dot(typingctx, c, a, b):
    """tile[c] += tile[a] (unsigned bytes) . tile[b] (signed bytes, groups of 4): ``tdpbusd``."""
    if not _tiles(c, a, b):
        return None

    def codegen(context, builder, signature, args):
        tiles = [ir.Constant(I8, t.literal_value) for t in signature.args]
        _call(builder, "llvm.x86.tdpbusd", VOID, tiles)
        return context.get_dummy_value()

    return types.void(c, a, b), codegen


@njit(inline="always")
def panel_sums(qx, i0, two, w, K4, sums):
    """sums[:16 * (1 + two), :32] = the int32 dot products of rows i0.. of ``qx`` (uint8, ``4 * K4`` inputs
    from byte 0; K4 a multiple of 16) with the weight panel ``w`` ((K4, 128) int8: 32 outputs); ``two``:
    32 rows instead of 16. The caller has loaded the configuration (:func:`configure`)."""
    lda = qx.strides[0]
    a = qx.ctypes.data + i0 * lda
    b = w.ctypes.data
    c = sums.ctypes.data
    ldc = sums.strides[0]
    zero(0)
    zero(1)
    if two:
        zero(2)
        zero(3)
    for g in range(0, K4, 16):  # 64 inputs: 16 groups of 4
        load(4, a + 4 * g, lda)
        load(6, b + g * 128, 128)  # outputs 0-15 of the panel
        load(7, b + g * 128 + 64, 128)  # outputs 16-31
        dot(0, 4, 6)
        dot(1, 4, 7)
        if two:
            load(5, a + 16 * lda + 4 * g, lda)
            dot(2, 5, 6)
            dot(3, 5, 7)
    store(0, c, ldc)
    store(1, c + 64, ldc)
    if two:
        store(2, c + 16 * ldc, ldc)
        store(3, c + 16 * ldc + 64, ldc)
