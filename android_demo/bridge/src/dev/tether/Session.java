package dev.tether;

import java.nio.ByteBuffer;

/**
 * Runs a {@link Model}: its arena and struct block are one direct buffer sized by the
 * engine ({@code tether_session_arena_size} + {@code tether_session_memory}), held until
 * {@link #close}. float32 input 0 in, float32 output 0 out. Calls are serialized; a closed
 * session refuses every call with IllegalStateException.
 */
public final class Session implements AutoCloseable {
  private final Model model;
  private long handle;
  private ByteBuffer memory;
  private final float[] output;
  private long lastNanos;

  public Session(Model model) {
    this.model = model;
    long m = model.handle();
    memory = Tether.direct(Tether.sessionMemory(m));
    handle = Tether.sessionCreate(m, memory);
    int n = 1;
    for (int d : model.outputShape(0)) n *= d;
    output = new float[n];
  }

  /**
   * Sets input 0 to {@code input} (its whole tensor, row-major), invokes, returns a copy of
   * output 0.
   *
   * @throws TetherException the engine failed (or the model's I/O is not float32)
   * @throws IllegalArgumentException {@code input} has the wrong length
   */
  public synchronized float[] run(float[] input) {
    if (handle == 0) throw new IllegalStateException("Session is closed");
    long t0 = System.nanoTime();
    Tether.sessionRun(model.handle(), handle, input, output);
    lastNanos = System.nanoTime() - t0;
    return output.clone();
  }

  /** Wall time of the last {@link #run}, input copy and output copy included. */
  public synchronized long lastInvokeNanos() {
    return lastNanos;
  }

  /** Frees the session. Idempotent. */
  @Override
  public synchronized void close() {
    if (handle != 0) Tether.sessionDestroy(handle);
    handle = 0;
    memory = null;
  }
}
