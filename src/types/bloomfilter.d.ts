// The `bloomfilter` package ships no types; this is the part of its API the module uses.
declare module 'bloomfilter' {
  export class BloomFilter {
    /** `m` bits, `k` hash functions. */
    constructor(m: number, k: number);
    readonly m: number;
    readonly k: number;
    readonly buckets: Uint32Array;
    add(value: string): void;
    test(value: string): boolean;
    static withTargetError(n: number, error: number): BloomFilter;
  }
}
