package dev.tether;

/**
 * An engine failure: the message is {@code "<status>: <the engine's text>"}, e.g.
 * {@code "format_error: op 3 'conv2d_1' (CONV_2D): input 1 is tensor 99, out of range"}.
 */
public final class TetherException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public TetherException(String message) {
    super(message);
  }

  /** The engine's status name ("format_error", "invalid_argument", ...). */
  public String status() {
    String m = getMessage();
    int colon = m == null ? -1 : m.indexOf(':');
    return colon < 0 ? "unknown" : m.substring(0, colon);
  }
}
