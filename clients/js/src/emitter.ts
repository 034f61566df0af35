/**
 * A small typed event emitter: `on` returns the function that removes the
 * handler. A handler that throws does not stop the others, nor the client:
 * its error is rethrown on a later task, where the runtime reports it.
 */
export class Emitter<Events extends object> {
  private _handlers: { [K in keyof Events]?: Set<(event: Events[K]) => void> } = {};

  on<K extends keyof Events>(type: K, handler: (event: Events[K]) => void): () => void {
    (this._handlers[type] ??= new Set()).add(handler);
    return () => this.off(type, handler);
  }

  off<K extends keyof Events>(type: K, handler: (event: Events[K]) => void): void {
    this._handlers[type]?.delete(handler);
  }

  /** @internal */
  _emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const handlers = this._handlers[type];
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try {
        handler(event);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
