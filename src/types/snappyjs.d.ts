/** The part of snappyjs (pure-JS Snappy, block format) that convis uses; the package ships no types. */
declare module 'snappyjs' {
  /** Block-format (not framed) Snappy; a Buffer in gives a Buffer out. */
  export function compress(input: Buffer): Buffer;
  export function compress(input: Uint8Array): Uint8Array;
  /** Throws on a corrupt stream or when the stated length exceeds maxLength. */
  export function uncompress(input: Buffer, maxLength?: number): Buffer;
  export function uncompress(input: Uint8Array, maxLength?: number): Uint8Array;
}
