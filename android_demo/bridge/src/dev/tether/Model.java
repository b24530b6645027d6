package dev.tether;

import java.nio.ByteBuffer;

/**
 * A loaded {@code .tmodel}: validated once, weights used in place. Its memory is Java's: the
 * model bytes and the pool the engine's {@code tether_model_memory} asks for, both direct
 * buffers held here until {@link #close}. Methods are thread-safe; a closed model refuses
 * every call with IllegalStateException.
 */
public final class Model implements AutoCloseable {
  private long handle;
  private ByteBuffer data;
  private ByteBuffer pool;
  private final long poolBytes;

  private Model(long handle, ByteBuffer data, ByteBuffer pool, long poolBytes) {
    this.handle = handle;
    this.data = data;
    this.pool = pool;
    this.poolBytes = poolBytes;
  }

  /**
   * Validates and loads {@code tmodel}.
   *
   * @throws TetherException the engine refused the bytes (the message names the field)
   */
  public static Model load(byte[] tmodel) {
    ByteBuffer data = Tether.direct(tmodel.length);
    data.position(Tether.alignOffset(data));
    data.put(tmodel);
    long scratch = 1 << 16;
    long need;
    while (true) {
      try {
        need = Tether.modelMemory(data, tmodel.length, Tether.direct(scratch));
        break;
      } catch (TetherException e) {
        if (!"out_of_memory".equals(e.status()) || scratch >= (1L << 30)) throw e;
        scratch *= 4;  // the query's temporaries outgrew the scratch buffer
      }
    }
    ByteBuffer pool = Tether.direct(need);
    return new Model(Tether.modelLoad(data, tmodel.length, pool), data, pool, need);
  }

  synchronized long handle() {
    if (handle == 0) throw new IllegalStateException("Model is closed");
    return handle;
  }

  /** Bytes of the model's pool (the engine's own figure plus the bridge's record). */
  public long memoryBytes() {
    return poolBytes;
  }

  public synchronized int inputCount() {
    return Tether.ioCount(handle(), 0);
  }

  public synchronized int outputCount() {
    return Tether.ioCount(handle(), 1);
  }

  public synchronized int[] inputShape(int index) {
    return Tether.ioShape(handle(), 0, index);
  }

  public synchronized int[] outputShape(int index) {
    return Tether.ioShape(handle(), 1, index);
  }

  /** Name of the instruction set the engine's kernels use here ("neon", "avx2", ...). */
  public static String isa() {
    return Tether.isa();
  }

  /** Frees the model; sessions and trainers of it must be closed first. Idempotent. */
  @Override
  public synchronized void close() {
    if (handle != 0) Tether.modelDestroy(handle);
    handle = 0;
    data = null;
    pool = null;
  }
}
